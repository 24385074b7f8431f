"""Files in and out: atomic writes (:mod:`.atomic`), image reading and conversion to RGB (:mod:`.images`),
file digests (:mod:`.hashing`). No torch here."""
