"""The web app's parts: the Gradio components (`app_components`, with their JS and CSS in `static/`),
audio rendering (`audio`) and the OSC server for live performance (`osc`). Needs the `web` extra
(gradio, python-osc, pretty_midi); the core package does not import this subpackage."""
