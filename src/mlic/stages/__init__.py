"""One module per DVC stage; each has a small `main(cfg, ...)` that loads inputs, calls the library, writes outputs."""
