"""The training core: datasets and on-device data, the model registry and model statistics,
pruning, the device and precision a config runs on, the allocator, and the train loop.

It sits above the meters (`energy`) and estimators it uses; nothing below imports it back.
"""
