"""The code forge: GitHub releases and tags (previous release, Latest, body; PyGithub for the API,
git for tags).

Imports the rooms below it; never a step.
"""
