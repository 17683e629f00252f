"""One table of the Hugging Face `datasets` library, for the loaders that accept `--hub`."""

from __future__ import annotations

from pathlib import Path

from fedsim.errors import DataError, require


def load_table(name: str, split: str = "train"):
    """A folder written by Dataset.save_to_disk, or else a hub name fetched by
    datasets.load_dataset (the one path that may use the network, and only when asked); of a
    DatasetDict, the `split`. A path the user typed is never taken for a hub name."""
    import datasets

    folder = Path(name).expanduser()
    if folder.is_dir():
        try:
            table = datasets.load_from_disk(str(folder))
        except (FileNotFoundError, ValueError) as error:
            raise DataError(f"--hub {name!r}: not a folder written by Dataset.save_to_disk "
                            f"({error})") from error
    elif name.startswith(("/", "./", "../", "~")) or Path(name).exists():
        raise DataError(f"--hub {name!r}: no such folder (a saved dataset folder, or a hub "
                        f"name such as user/dataset)")
    else:
        try:
            table = datasets.load_dataset(name)
        except Exception as error:   # the library raises many kinds; all mean "not available"
            raise DataError(f"--hub {name!r}: not a saved dataset folder and could not be loaded "
                            f"from the Hugging Face hub ({type(error).__name__}: {error})") from error
    if isinstance(table, datasets.DatasetDict):
        require(split in table, "hub", name, f"must have a {split} split")
        table = table[split]
    return table
