"""Where cases come from: the sources (hub, local folder, sample), the TSV reader and its child process, the
image and truth cells, the first-contact check, and the synthetic set. Imports benchmark/ and the ground."""
