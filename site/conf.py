"""Sphinx settings for the course website. `python -m minidiff.website` (`make site`) gathers the
executed lessons, the front page (from the README's course map) and MathJax into a folder of
sources and builds them with these settings; see minidiff/website.py."""

project = "minidiff"
html_title = "minidiff: diffusion models, built step by step"
extensions = ["myst_nb"]

# the notebooks were executed by `make course`; the site shows their outputs as they are
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# math: MathJax 2 from the course's own copy (jupyter-server-mathjax, copied into _static/mathjax),
# the same MathJax and configuration as the course's nbconvert pages; nothing comes from the web
from minidiff.notebook import MATHJAX_URL  # noqa: E402 — with the fonts set for the local copy (see there)

mathjax_path = MATHJAX_URL
mathjax2_config = {
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": True,
        "processClass": "math|output_area",
        "ignoreClass": "tex2jax_ignore|mathjax_ignore|document",
    },
    "showMathMenu": False,
    "messageStyle": "none",
}
myst_update_mathjax = False  # (a MathJax 3 setting)

html_theme = "sphinx_book_theme"
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
}
html_show_sourcelink = False
html_copy_source = False
