"""What every host shares — ComfyUI's nodes, the A1111/Forge tab, the CLI: the selection syntax
(groups, gains), and the command-line host itself."""
