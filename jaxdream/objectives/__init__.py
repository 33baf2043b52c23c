"""Loss terms (:mod:`.losses`: Gram, Wasserstein, total variation, content), the Gatys objective
(:mod:`.gatys`) and its exact band-by-band evaluation (:mod:`.bands`)."""
