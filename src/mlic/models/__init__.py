"""Architectures, one module each (`mlic/models/<arch>.py`), found by name through `mlic.models.registry.get_arch`.

Nothing is imported here on purpose: importing one architecture must not import the others (see `mlic.deps`).
"""
