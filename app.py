"""LRML Explorer: the Streamlit entry point. Start it with ``streamlit run app.py``.

Streamlit runs this file on every rerun. It starts the default training run on
a first launch, keeps the selected run, user and movie in sync with the URL,
draws the run selector in the sidebar and then runs the current page.

Presentation mode (``?present=1`` in the URL, or the sidebar toggle) widens the
layout, enlarges the text and starts with the sidebar collapsed, for demos.
"""

import logging

import streamlit as st

from lrml import jobs
from lrml.runs import models_dir
from pages import shared

# basicConfig does nothing once the root logger has a handler, so reruns add none.
logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)

PRESENT_PARAM = "present"
PRESENT_KEY = "presentation_mode"
# Streamlit sizes text in rem, so a larger root font scales the whole page.
PRESENTATION_CSS = """<style>
html { font-size: 20px; }
[data-testid="stMainBlockContainer"] { max-width: none; padding: 2rem 3rem; }
</style>"""


def presentation_mode() -> bool:
    """Return whether presentation mode is on, and keep ``?present=1`` in the URL.

    A session's first run takes it from the URL, later runs from the sidebar toggle.
    """
    if PRESENT_KEY not in st.session_state:
        st.session_state[PRESENT_KEY] = st.query_params.get(PRESENT_PARAM) == "1"
    present = bool(st.session_state[PRESENT_KEY])
    if present and st.query_params.get(PRESENT_PARAM) != "1":
        st.query_params[PRESENT_PARAM] = "1"
    elif not present and PRESENT_PARAM in st.query_params:
        del st.query_params[PRESENT_PARAM]
    return present


shared.ensure_navigation()

present = presentation_mode()
st.set_page_config(
    page_title="LRML Explorer",
    # An emoji icon is drawn in the browser; a Material icon would be fetched
    # from fonts.gstatic.com on every page load.
    page_icon="🎬",
    layout="wide",
    initial_sidebar_state="collapsed" if present else "auto",
)
if present:
    st.html(PRESENTATION_CSS)

try:
    jobs.ensure_default_run()
except OSError as error:
    st.error(f"Could not start the default training run in {models_dir()}: {error}")

shared.restore_selection()
shared.run_selector()
st.sidebar.toggle(
    "Presentation mode",
    key=PRESENT_KEY,
    help="Larger text, a wide layout and a collapsed sidebar, for demos. "
    "Adding ?present=1 to an address turns it on too.",
)

navigation = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/recommend.py", title="Recommend", icon=":material/recommend:"),
        st.Page("pages/attention.py", title="Attention", icon=":material/bar_chart:"),
        st.Page(
            "pages/embeddings.py",
            title="Embeddings",
            icon=":material/scatter_plot:",
        ),
        st.Page("pages/tour.py", title="Tour", icon=":material/tour:"),
    ]
)
navigation.run()
