"""The Streamlit dashboard (app.py) and its helpers. Reads run directories only; never imports torch."""
