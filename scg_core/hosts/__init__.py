"""What every host shares — ComfyUI's nodes, the A1111/Forge tab, the CLI: the selection syntax
(:mod:`.selection`), the cached loader and the bundled default's name (:mod:`.loading`), the hint of
a source image with its one resize (:mod:`.hint`), and the command-line host itself (:mod:`.cli`)."""
