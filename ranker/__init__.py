"""Rank pre-trained image models for a new labelled image dataset."""
