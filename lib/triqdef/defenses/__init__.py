"""The defenses' training steps: TriQDef (FDP, GPDP, BACT), PBAT and DWQ (:mod:`.steps`)."""
