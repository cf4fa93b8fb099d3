"""The paper's studies as functions (`fm4npp study`): data efficiency (Figure 7), model size (Figure 6) and the
linear probe ("a single linear mapping", Figure 8). Each writes its tables and figure into its own folder.

    fm4npp_models.studies.data_efficiency.data_efficiency   heads on 30, 100, ... labeled events, FM and AdapterOnly
    fm4npp_models.studies.model_size.model_size             pretrain each size with one budget, then the heads
    fm4npp_models.studies.probe.probe                       a linear classifier / linear map of frozen features
"""
