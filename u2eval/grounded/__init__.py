"""Regions in answers (boxes, points, masks), read under a box convention and scored against the rows'
region truth, in a pass of its own after judging. Imports scoring/, data/, benchmark/ and the ground."""
