"""Neural network pieces: timestep embeddings, UNet blocks and the UNet itself."""
