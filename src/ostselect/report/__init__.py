"""Reports: a self-contained HTML page (or Markdown + PNGs) that shows why samples were kept."""

from ostselect.report.build import build_report

__all__ = ["build_report"]
