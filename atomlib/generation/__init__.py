"""Generation: from a trained model to text (notebook 05, the chat, the evaluation).

    sampling    the decode loop and its controls: temperature, top-k/p, penalties, stops, streaming
    filters     named stages that clean a raw sample and say what they removed
    adaptive    what kind of prompt is this, and which sampling preset and framing suit it
    completion  finish an unfinished line, best of N
    answer      the one answer pipeline: prompt -> fit -> preset -> sample -> filter -> Answer
"""
