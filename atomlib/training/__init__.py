"""Training: a TrainConfig in, a run folder out (notebook 03), and `atom race` (notebook 04).

    launch   resolve the config, train here or start torchrun workers (and be their entry point)
    train    the training loop: train_step, evaluate, save over a TrainState
    state    TrainState and TrainSetup, the model built or resumed, what a checkpoint records
    batches  random windows of the token array per rank, and the loss on fixed ones
    dist     this process's place in a torchrun job, and the collectives the loop uses
    runs     run folders: default name, the .lock, metrics.jsonl, a run's summary
    optim    AdamW, or Muon for hidden matrices with AdamW for the rest; the lr schedule
    race     val loss against wall clock, several configs (and nanoGPT's recipe) side by side
"""
