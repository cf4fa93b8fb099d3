"""fm4npp_data: sPHENIX TPC data for foundation models: simulation, conversion, preparation, loading."""
