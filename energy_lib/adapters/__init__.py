"""Adapters that let a training framework drive an `energy_lib.Tracker` from its own callback
hooks, so a run measured there gets the same windows, prediction, budget stop and record as a
loop written by hand:

    from energy_lib.adapters.lightning import EnergyCallback      # the `lightning` extra
    from energy_lib.adapters.huggingface import EnergyCallback    # the `huggingface` extra

Each module imports its framework at the top, so nothing here (nor `import energy_lib`) loads
Lightning or transformers until the user asks for that adapter. `_run` holds what both share.
"""
