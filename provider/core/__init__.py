"""What every resource is built from that talks to nothing: errors at the engine's
boundary, input checks and views, progress lines, batch entry lists, the retirement registry."""
