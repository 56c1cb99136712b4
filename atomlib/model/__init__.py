"""The model: one GPT with one forward, its CPU kernels, its files on disk (notebook 03 trains it).

    gpt          the decoder-only transformer (GPT-2's layout or a modern one), KV cache passed in
    cache        the KV caches: KVCache (rows at one length), RowCache (each row at its own)
    layout       the architecture switches, declared once for the model's and the trainer's config
    kernels      CPU fast paths the forward calls: same math, fewer passes over memory
    checkpoint   run folders' weights and state: safetensors and JSON, never a pickle
    gpt2_import  OpenAI's GPT-2 weights into the GPT, offline from a folder or the hub cache
"""
