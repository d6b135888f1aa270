"""``OUT/report.html``: the page, contact sheets, thumbnails and their assets."""
