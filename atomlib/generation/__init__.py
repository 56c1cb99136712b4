"""Generation: from a trained model to text (notebook 05, the chat, the evaluation).

    sampling    the sampling controls: SamplingParams, penalties, temperature, top-k/p, the draw
    engine      the decode loop: prefill, one token a step, sliding window, stop rules, streaming
    batcher     continuous batching: many requests decode together, joining and leaving between steps
    textstream  the loop's host side: ids to text, stop strings, end-of-text, streamed pieces
    loading     what `atom sample` samples from: a run or GPT-2 weights, and a prompt (text or FILE:)
    filters     named stages that clean a raw sample and say what they removed
    adaptive    what kind of prompt is this (readable rules), and what is its topic
    presets     each prompt kind's sampling preset and the framing the model continues
    completion  finish an unfinished line, best of N
    answer      the one answer pipeline: prompt -> fit -> preset -> sample -> filter -> Answer
"""
