"""Training: a TrainConfig in, a run folder out (notebook 03), and `atom race` (notebook 04).

    train   the trainer (being split into run folder, launch and loop modules)
    optim   AdamW, or Muon for hidden matrices with AdamW for the rest
    race    val loss against wall clock, several configs (and nanoGPT's recipe) side by side
"""
