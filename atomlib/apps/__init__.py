"""Apps: the ways a person talks to a trained model (notebook 06, `atom chat`).

    chat     the chat session, its commands and the terminal front end
    widgets  the notebook chat (ipywidgets) over the same session
    enhance  optional rewrite of answers by a local LLM behind an OpenAI-compatible API
"""
