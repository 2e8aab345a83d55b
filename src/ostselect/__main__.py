"""`python -m ostselect ...` runs the `ost` command line (where the `ost` script is not on PATH)."""

from ostselect.cli import app

if __name__ == "__main__":
    app(prog_name="ost")
