"""Initializer cloning shared by the layers."""


def clone_initializer(initializer, offset=0, **updates):
    """A fresh copy of `initializer` for one weight.

    A single initializer object shared by several weights is a trap: a
    seeded one gives them all identical values. Each clone of a seeded
    initializer gets the seed `seed + offset`, so weights cloned with
    different offsets differ, and the whole layer stays reproducible.

    Args:
        initializer: a `keras.initializers.Initializer`.
        offset: int, added to the initializer's integer seed, if it has one.
        **updates: config entries to set, where the initializer's config
            has them (others are ignored).
    """
    config = initializer.get_config()
    config.update({k: v for k, v in updates.items() if k in config})
    if isinstance(config.get("seed"), int):
        config = {**config, "seed": config["seed"] + offset}
    return initializer.__class__.from_config(config)
