"""mkdocs hook: the README, the repository's front page, is also a page of the site.

The README lives at the top of the repository and links into ``docs/`` (``docs/running.md``);
the site is built from ``docs/`` alone, where that page is ``running.md``. So the site gets
a generated page ``readme.md`` with the README's text and the ``docs/`` prefix of its
links dropped, and the pages that link back to ``../README.md`` are pointed at it. The
text is read at build time, so there is no second copy to keep in step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

PAGE = "readme.md"
# A Markdown link or a link reference definition whose target starts with docs/.
_INTO_DOCS = re.compile(r"(\]\(\s*<?|^\s{0,3}\[[^\]]+\]:\s*<?)docs/", re.M)
_BACK_TO_README = re.compile(r"\]\(\.\./README\.md(?=[#)])")


def on_files(files: Files, config: Any) -> Files:
    """Add the README as the page ``readme.md``, its links into ``docs/`` made site-relative."""
    readme = Path(config.config_file_path).parent / "README.md"
    text = _INTO_DOCS.sub(r"\1", readme.read_text(encoding="utf-8"))
    files.append(File.generated(config, PAGE, content=text))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Point the top-level pages' ``../README.md`` links at the generated page."""
    if "/" in page.file.src_uri:
        return markdown
    return _BACK_TO_README.sub(f"]({PAGE}", markdown)
