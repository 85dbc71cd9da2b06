"""What the models are: the zoo manifest, each member as a frozen feature extractor with verified real weights.

The lowest layer of the package: it imports nothing else of ``ranker`` but :mod:`ranker.files`.
"""
