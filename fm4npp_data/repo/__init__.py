"""The benchmark dataset repository (`fm4npp/tpc-pp200`), one module a concept:

    layout   what a repository is: format, file names, configs and splits, shard names, which event goes where
    build    `build(dirs, out, BuildOptions)`: the repository from prepared sets
    card     the dataset card (README.md): dataset_card.md filled in, under the YAML header `datasets` writes
    verify   `verify(repo)`: every file, count and split invariant re-checked against splits.json
    hub      `publish(repo, repo_id)` to the Hugging Face hub, the check after the upload, and `load(path_or_id)`

Import a name from the module that defines it (`from fm4npp_data.repo.build import build`); the package root
`fm4npp_data` exports `build`, `verify` and `load`. This package re-exports nothing: its modules `build` and `verify`
are named for their functions, and a re-exported function would hide its module (`fm4npp_data.repo.verify` would be
the function or the module depending on what was imported first).
"""
