"""Where and how programs run: devices and the mesh (:mod:`.parallel`), memory estimates
(:mod:`.memory`), precision (:mod:`.precision`), XLA flags (:mod:`.xla_flags`) and the
persistent compilation cache (:mod:`.cache`)."""
