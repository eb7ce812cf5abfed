"""Neural network pieces: timestep embeddings, UNet blocks, the UNet, and the tokenizer and text encoder."""
