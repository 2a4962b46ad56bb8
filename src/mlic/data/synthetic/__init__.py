"""The embedded synthetic competitions: Planet-like chips (`planet`) and iMet-like photos (`imet`).

Both are pure functions of a seed and an image's index, written to disk by the `sample` stage. `common` holds what
their renderers share; `planet_land_probs.csv` is the Planet label model's largest table, measured on the real data.
"""
