"""The training core: datasets and on-device data, the model registry and model statistics,
pruning, the device and precision a config runs on, the allocator, and the train loop; and
`settings`, the checks of what a run may set about its model and pruning, made without torch.

It sits above the meters (`energy`) and estimators it uses; nothing below imports it back.
"""
