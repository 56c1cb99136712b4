"""Apps: the ways a person talks to a trained model (notebook 06, `atom chat`, `atom serve`).

    session     the chat session (UI-free): settings, mode, the answer call, regenerate, listeners
    commands    the one table of chat commands: parser, /help, validation, the widget's slider bounds
    transcript  a reply to one input, the turns of a chat, saved as Markdown or JSON
    terminal    `atom chat`: the terminal view (readline, Ctrl-C, streaming) and scripted exchanges
    widgets     the notebook chat: an ipywidgets view over the same session, its controls drawn
                from the command table and redrawn from the session after every change
    promptbox   the chat's text box (anywidget): Enter sends, Shift+Enter adds a line, blur never sends
    transcript_html  the notebook transcript as HTML: turns, the streaming answer, folded long prompts
    enhance     optional rewrite of answers by a local LLM: where the server is, the health check,
                the rewrite prompt, its validation and the result with its reason
    serve       `atom serve`: the OpenAI-compatible HTTP API (FastAPI + uvicorn) over the answer
                pipeline, requests decoded together by generation.batcher; limits, errors, the key
    serve_api   the API's shapes: OpenAI requests to ATOM's Settings, Answers to JSON and stream events
    llm_client  the hardened OpenAI-compatible HTTP client (one deadline, 1 MiB, JSON depth, no
                redirects, streaming) that enhance calls
"""
