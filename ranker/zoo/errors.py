"""The zoo's one error type, apart from :mod:`ranker.zoo.manifest` so that the weight readers it uses can raise it."""


class ZooError(ValueError):
    """A zoo problem a user can fix: unknown model, weights not installed, wrong weights."""
