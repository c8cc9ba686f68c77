"""Triton pilots: launching (binary | apptainer | docker), supervision, endpoint files, discovery."""
