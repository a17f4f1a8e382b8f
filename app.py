"""LRML Explorer: the Streamlit entry point. Start it with ``streamlit run app.py``.

Streamlit runs this file on every rerun. It starts the default training run on
a first launch, keeps the selected run, user and movie in sync with the URL,
draws the run selector in the sidebar and then runs the current page.
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

shared.ensure_navigation()

st.set_page_config(
    page_title="LRML Explorer", page_icon=":material/hub:", layout="wide"
)

try:
    jobs.ensure_default_run()
except OSError as error:
    st.error(f"Could not start the default training run in {models_dir()}: {error}")

shared.restore_selection()
shared.run_selector()

navigation = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/recommend.py", title="Recommend", icon=":material/recommend:"),
        st.Page("pages/attention.py", title="Attention", icon=":material/bar_chart:"),
        st.Page(
            "pages/embeddings.py",
            title="Embeddings",
            icon=":material/scatter_plot:",
        ),
    ]
)
navigation.run()
