"""The sPHENIX TPC and the p+p collision environment as data.

Every detector or physics constant the project uses lives here, once, with its source. docs/physics.md has one
section per group of constants below (named "docs/physics.md §N" in the comments), with every value, its unit, its
source and, for derived values, the calculation. Source tags:

- [CS]   sPHENIX-Collaboration/coresoftware, the file named in the comment (line numbers, where docs/physics.md
         gives them, refer to commit 9cc4b44d).
- [MAC]  sPHENIX-Collaboration/macros, the file named in the comment (line numbers: commit 48a4cc62).
- [PDG]  Review of Particle Physics: "Passage of particles through matter" (PPM; section numbers as in RPP
         2016-2024), the physical constants and the particle listings.
- [FM]   FM4NPP: the paper (arXiv:2508.14087), its published code (FM4NPP/PP_collision) and its data release
         TPCpp-10M (Zenodo 10.5281/zenodo.16970029).
- [TDR]  the sPHENIX Technical Design Report (2019) and the sPHENIX detector papers.
- [DER]  derived here from the cited inputs; the calculation is in docs/physics.md.
- [SIM]  a choice of this project's fast simulation, not an sPHENIX fact.

Units: cm, GeV, GeV/c, ns, tesla, unless a name says otherwise.
"""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------------------------------------------
# TPC readout layers
# --------------------------------------------------------------------------------------------------------------

#: Number of TPC readout layers (pad rows): 3 modules of 16. [CS] simulation/g4simulation/g4tpc/PHG4TpcSubsystem.cc;
#: docs/physics.md §1
N_LAYERS = 48
N_MODULES = 3
LAYERS_PER_MODULE = 16

#: sPHENIX numbers tracker layers globally: MVTX 0-2, INTT 3-6, TPC 7-54, TPOT 55-56 (the `layer` of the
#: evaluator ntuples). [CS] g4tpc/PHG4TpcSubsystem.cc; docs/physics.md §1
FIRST_TPC_LAYER = 7
LAST_TPC_LAYER = FIRST_TPC_LAYER + N_LAYERS - 1  # 54
MVTX_LAYERS = (0, 1, 2)
INTT_LAYERS = (3, 4, 5, 6)

#: Radii (cm) of TPC layers 7..54 from the pre-2025 layer-radius formula, which the TPCpp-10M release was made
#: with: its r range is layer 7 and layer 54 / cos(pi/144). [CS] g4tpc, [FM] dataset.py; docs/physics.md §1
LAYER_RADII = np.array(
    [
        31.372, 31.944, 32.516, 33.088, 33.660, 34.232, 34.804, 35.376,
        35.948, 36.520, 37.092, 37.664, 38.236, 38.808, 39.380, 39.951,
        41.659, 42.680, 43.700, 44.721, 45.742, 46.762, 47.783, 48.804,
        49.824, 50.845, 51.866, 52.886, 53.907, 54.928, 55.948, 56.969,
        58.911, 60.008, 61.105, 62.202, 63.299, 64.396, 65.493, 66.590,
        67.688, 68.785, 69.882, 70.979, 72.076, 73.173, 74.270, 75.367,
    ],
    dtype=np.float64,
)  # fmt: skip

#: Radial limits (cm) of the three readout modules R1, R2, R3. [CS] g4tpc/PHG4TpcSubsystem.cc,
#: g4tpc/PHG4TpcDetector.cc; docs/physics.md §2
MODULE_BOUNDARIES = np.array([[31.105, 40.249], [41.153, 57.475], [58.367, 75.911]], dtype=np.float64)

#: Pad-row thickness (cm) per module: inner (alternating 0.563/0.569), mid, outer. [CS] g4tpc readout geometry;
#: docs/physics.md §2
ROW_THICKNESS = np.array([0.566, 1.0207, 1.0970], dtype=np.float64)

#: Pads around the full circle per row, per module. [CS] g4tpc/PHG4TpcSubsystem.cc; docs/physics.md §3
PADS_PER_ROW = np.array([1128, 1536, 2304], dtype=np.int64)

#: TPC sectors per side. [CS] offline/packages/trackbase/TpcDefs.h; docs/physics.md §3
N_SECTORS = 12

#: Gas volume radial extent (cm). [CS] g4tpc/PHG4TpcSubsystem.cc; docs/physics.md §4
GAS_R_MIN = 21.6
GAS_R_MAX = 76.4

#: Drift length per side (cm): the |z| limit of the active volume (older simulations: 105.5).
#: [CS] g4tpc/PHG4TpcSubsystem.cc, [MAC] common/G4_TrkrVariables.C; docs/physics.md §4
DRIFT_LENGTH = 102.325

#: Half-width (cm) of the central membrane: no ionization is collected for |z| below this.
#: [CS] g4tpc/PHG4TpcSubsystem.cc, [MAC] common/G4_TrkrVariables.C; docs/physics.md §4
CENTRAL_MEMBRANE_HALF_WIDTH = 0.28

#: Solenoid field (T), uniform in this project; the real simulation uses a field map ([MAC] common/G4_Magnet.C).
#: [CS] offline/packages/trackbase_historic/TrackSeed_v2.cc, [FM] paper; docs/physics.md §4
B_FIELD = 1.4

#: Curvature constant: R[cm] = p_T[GeV/c] / (C_LIGHT_FIELD * B[T]) * 100, with 0.299792458 GeV/(c T m) (the speed
#: of light in units of 1e9 m/s). [PDG] physical constants; docs/physics.md §4
C_LIGHT_FIELD = 0.299792458

#: Drift velocity (cm/ns) and ADC time bin (ns) of the Ar/CF4/iC4H10 gas. [MAC] common/G4_TrkrVariables.C,
#: [CS] g4tpc/PHG4TpcElectronDrift.cc (drift velocity), g4tpc/PHG4TpcSubsystem.cc (time bin); docs/physics.md §4
DRIFT_VELOCITY = 0.00755
TIME_BIN_NS = 53.326

#: Spacepoint resolution (cm) of the TPC near perpendicular incidence: 150 um in r-phi, 500 um in z.
#: [MAC] common/G4_TrkrSimulation.C; docs/physics.md §10. Approximate: the real resolution depends on drift
#: length, crossing angle and cluster size ([CS] offline/packages/trackbase/ClusterErrorPara.cc).
TPC_SIGMA_RPHI = 0.015
TPC_SIGMA_Z = 0.05

#: Clusterizer window: +-3 pads in phi (about 0.6 cm at 2 mm pitch) and +-5 time bins (about 2 cm of drift).
#: Crossings of one particle closer than this on one pad row make one cluster. [CS] offline/packages/tpc/
#: TpcClusterizer.h [DER]; docs/physics.md §10
CLUSTER_WINDOW_RPHI = 0.6
CLUSTER_WINDOW_Z = 2.0

# --------------------------------------------------------------------------------------------------------------
# Normalization used by the published FM4NPP code [FM] fm4npp/datasets/dataset.py; docs/physics.md §12
# --------------------------------------------------------------------------------------------------------------
ETA_RANGE = (-2.0, 2.0)
PHI_RANGE = (-math.pi, math.pi)
#: r range (cm): layer 7 and layer 54 / cos(pi/144). [FM] dataset.py, [DER]
R_RANGE = (31.372, 75.385)
ENERGY_MEAN = 253.0982
ENERGY_STD = 268.7093

#: The graph baselines' normalized pseudorapidity eta / GNN_ETA_SCALE in (-1, 1) (their radius: the index of the
#: nearest of the N_LAYERS layer radii, divided by N_LAYERS). [FM] paper appendix C "Adapt Exa.TrkX Pipeline"
GNN_ETA_SCALE = 1.96

# --------------------------------------------------------------------------------------------------------------
# Labels [FM] paper appendix "Noise-tagging", published code; docs/physics.md §11
# --------------------------------------------------------------------------------------------------------------
#: Noise cut: truth p_T below 60 MeV/c (the release's code uses p_T; the paper's text says momentum).
NOISE_CUT = 0.060

# --------------------------------------------------------------------------------------------------------------
# Collision vertex, RHIC p+p at 200 GeV
# --------------------------------------------------------------------------------------------------------------
#: sqrt(s) (GeV) of the p+p collisions. [FM] paper appendix "Dataset"; docs/physics.md §5
SQRT_S = 200.0
#: Gaussian vertex spread (cm): sigma_z = 16 cm ("measured in 2024 for 1.5 mrad crossing angle"), sigma_x =
#: sigma_y = 120 um, mean (x, y) = (-0.07, 0.141) cm; the macros the paper cites (2025) postdate the 2024-09
#: change from sigma_z = 10 cm. [MAC] common/G4_Input.C ApplysPHENIXBeamParameter (pp_COLLISION); docs/physics.md §5
VERTEX_SIGMA_Z = 16.0
VERTEX_SIGMA_XY = 0.012
VERTEX_MEAN_XY = (-0.07, 0.141)
#: Vertex time spread (ns): 20 cm/c. [MAC] common/G4_Input.C; docs/physics.md §5
VERTEX_SIGMA_T = 0.67

# --------------------------------------------------------------------------------------------------------------
# Minimum-bias trigger and pile-up; docs/physics.md §5a
# --------------------------------------------------------------------------------------------------------------
#: Pseudorapidity coverage of the Minimum Bias Detector (MBD): two arrays of quartz Cherenkov radiators with
#: PMTs, one on each side, covering 3.51 < |eta| < 4.61. [TDR] (the MBD, inherited from PHENIX's beam-beam counters)
MBD_ETA = (3.51, 4.61)
#: The minimum-bias trigger: at least this many MBD hits on each side (north and south, "MBD N&S >= 1").
MBD_MIN_HITS = 1
#: Refractive index of fused quartz (SiO2) at about 400 nm: a charged particle makes Cherenkov light (a hit) only
#: above beta = 1/n = 0.686. [PDG] "Atomic and nuclear properties of materials" (silicon dioxide, fused quartz)
QUARTZ_REFRACTIVE_INDEX = 1.458
#: Maximum drift time (ns): drift length / drift velocity = 102.325 cm / 7.55 cm/us = 13.55 us, the window in
#: which a collision before or after the triggered one still leaves TPC clusters in its readout. [DER]
DRIFT_TIME = DRIFT_LENGTH / DRIFT_VELOCITY

# --------------------------------------------------------------------------------------------------------------
# Gas: Ar/CF4/iC4H10 75:20:5 [CS] g4tpc/PHG4TpcSubsystem.cc, [MAC] common/G4_TrkrVariables.C; docs/physics.md §6
# --------------------------------------------------------------------------------------------------------------
#: Density (g/cm3) as in the Geant4 simulation (sum of x_i rho_i). [CS] g4tpc/PHG4TpcDetector.cc,
#: offline/framework/phool/sphenix_constants.h (CF4)
GAS_DENSITY = 2.148e-3
#: <Z/A> (mass-weighted). [DER] from [CS] offline/packages/trackreco/GPUTPCTrackParam.h
GAS_Z_OVER_A = 0.4676
#: Mean excitation energy (GeV): 141 eV by Bragg additivity ([PDG] PPM §x.2.10). [DER] from GPUTPCTrackParam.h
GAS_I = 141e-9
#: Radiation length (cm) at the Geant4 density: 23.9 g/cm2 / 2.148 mg/cm3 ([PDG] PPM §x.4.2). [DER]
GAS_X0 = 23.9 / GAS_DENSITY
#: Sternheimer density-effect parameters of the mixture (x0, x1, a, k, C-bar); delta = 0 for beta*gamma < 79.
#: [DER] (Sternheimer-Peierls prescription for gases; [PDG] PPM §x.2.5)
GAS_STERNHEIMER = (1.9, 4.0, 0.253, 3.0, 11.10)

#: Bethe constant K = 4 pi N_A r_e^2 m_e c^2 (GeV cm2/mol). [PDG] PPM §x.2.3; docs/physics.md §8
BETHE_K = 0.307075e-3
#: Electron mass (GeV). [PDG] physical constants
ELECTRON_MASS = 0.51099895e-3
#: Landau-Vavilov j constant of the most probable loss. [PDG] PPM §x.2.9
LANDAU_J = 0.200
#: The Bethe equation is accurate to a few % for 0.1 < beta*gamma < 1000 and turns over below about 0.05, near
#: the stopping-power maximum (the Bragg peak; lower velocities need the Lindhard-Scharff regime). The simulation
#: uses its value at 0.05 below that: a proton there has 1.2 MeV left, about 1 cm of gas. [PDG] PPM §x.2.1-2.3
BETHE_MIN_BETA_GAMMA = 0.05
#: Masses (GeV) of the hadrons a nuclear interaction emits: charged pion and proton. [PDG] particle listings
PION_MASS = 0.13957039
PROTON_MASS = 0.93827209
#: Classical electron radius (cm) and Avogadro's number (1/mol), for the Klein-Nishina cross section per electron
#: and electrons per g. [PDG] physical constants
ELECTRON_RADIUS = 2.8179403262e-13
AVOGADRO = 6.02214076e23

# --------------------------------------------------------------------------------------------------------------
# Decays of charged pions, kaons and muons (PYTHIA leaves them stable, Geant4 decays them); docs/physics.md §8b
# --------------------------------------------------------------------------------------------------------------
#: Masses (GeV) of the muon, the charged kaon and the neutral pion. [PDG] particle listings
MUON_MASS = 0.1056583755
KAON_MASS = 0.493677
PI0_MASS = 0.1349768
#: Mean proper decay lengths c*tau (cm): pi+- 7.8045 m, K+- 3.711 m (tau 1.2380e-8 s), mu+- 658.638 m. [PDG]
#: particle listings
PION_CTAU = 780.45
KAON_CTAU = 371.14
MUON_CTAU = 65_863.8
#: Fraction of stopped mu- that decay rather than being captured by a nucleus, in the TPC gas: the muon is captured
#: into an atom in proportion to Z (Fermi-Teller) per atom of Ar/CF4/iC4H10 75:20:5 (Ar 0.57, F 0.31, C 0.10, H 0.02,
#: and a muonic hydrogen atom passes its muon on to a heavier one, taken as Ar), and decays from the 1s orbit with
#: probability tau_mu-(Z) / tau_mu (Ar 0.244, F 0.666, C 0.922; Suzuki, Measday and Roalsvig, PRC 35 (1987) 2212):
#: 0.44. A stopped pi- or K- is always captured; pi+, K+ and mu+ decay at rest. [DER]
MUON_MINUS_DECAY_FRACTION = 0.44
#: Mean life (ns) of the stopped mu- that decay in the gas: tau_mu-(Z) (Ar 537, F 1463, C 2026 ns, same source)
#: averaged with the weights above times each element's decay fraction: 1,280 ns, against 2,197 ns free. [DER]
MUON_MINUS_GAS_LIFETIME = 1280.0
#: K+ decay channels and branching fractions (the charge conjugates for K-): mu+ nu, pi+ pi0, pi+ pi+ pi-,
#: pi0 e+ nu (Ke3), pi0 mu+ nu (Kmu3), pi+ pi0 pi0; together 99.99 %. pi+ -> mu+ nu is 99.988 %. [PDG] particle
#: listings
KAON_BRANCHING = (0.6356, 0.2067, 0.05583, 0.0507, 0.03352, 0.01760)

# --------------------------------------------------------------------------------------------------------------
# Hadronic interactions; docs/physics.md §8a
# --------------------------------------------------------------------------------------------------------------
#: Nuclear interaction length lambda_I ~ 35 g/cm2 A^(1/3) (of nucleons; pions and kaons interact about 20 % less
#: often, which the simulation neglects). [PDG] "Particle detectors at accelerators", calorimetry, hadronic showers
NUCLEAR_LENGTH_COEFFICIENT = 35.0
#: Effective mass number A of each MATERIAL cylinder, in MATERIAL's order: Be; Si (MVTX, INTT); carbon fibre
#: (supports); the field cage, mostly Kapton and FR4 (C, H, N, O). [SIM] (the dominant element of each)
MATERIAL_MASS_NUMBER = (9.012, 28.09, 28.09, 28.09, 12.01, 28.09, 28.09, 28.09, 28.09, 12.01, 12.01, 12.01)
#: Nuclear interaction length (g/cm2) of the gas: 1/lambda = sum_j w_j / lambda_j over the mass fractions (Ar 0.594,
#: CF4 0.349, iC4H10 0.058) with lambda_j from the A^(1/3) rule per element: 103.4 g/cm2, 481 m at the gas density.
#: [DER]
GAS_NUCLEAR_LENGTH = 103.4
#: Mean number of protons knocked out of the nucleus in an inelastic interaction, their mean kinetic energy (GeV,
#: exponential), the mean number of charged pions per GeV of the projectile's kinetic energy, and the rms angle (rad)
#: of the pions to the projectile. A compact stand-in for Geant4's Bertini cascade at 0.1-10 GeV. [SIM]
HADRONIC_PROTONS = 1.5
HADRONIC_PROTON_ENERGY = 0.040
HADRONIC_PIONS_PER_GEV = 1.2
HADRONIC_PION_ANGLE = 0.6

# --------------------------------------------------------------------------------------------------------------
# Material in front of (and inside) the TPC, as thin cylinders; docs/physics.md §7
# --------------------------------------------------------------------------------------------------------------
#: (name, radius cm, half-length cm, x/X0 at normal incidence, areal density g/cm2, tracker layer or -1).
#: The silicon layers also record clusters (sPHENIX layers 0-6); the areal densities are the X0 fractions
#: converted with each material's X0 (Be 65.19, Si 21.82, C 42.7 g/cm2), and the field cage is the sum of its
#: Cu / FR4 / NOMEX / Kapton foils ([DER]). Radii: [MAC] common/G4_Pipe.C (beam pipe), [CS]
#: g4mvtx/PHG4MvtxDefs.h, g4intt/PHG4InttSubsystem.cc, g4tpc/PHG4TpcSubsystem.cc (field cage). Half-lengths of
#: MVTX (27 cm staves) and INTT (ladders of about 46 cm) are approximate.
MATERIAL = (
    ("beam pipe (Be)", 2.04, 60.0, 0.0022, 0.141, -1),
    ("MVTX L0", 2.523, 13.5, 0.003, 0.065, 0),
    ("MVTX L1", 3.336, 13.5, 0.003, 0.065, 1),
    ("MVTX L2", 4.148, 13.5, 0.003, 0.065, 2),
    ("INTT support skin", 6.5, 23.0, 0.001, 0.043, -1),
    ("INTT L3", 7.188, 23.0, 0.005, 0.109, 3),
    ("INTT L4", 7.732, 23.0, 0.005, 0.109, 4),
    ("INTT L5", 9.680, 23.0, 0.005, 0.109, 5),
    ("INTT L6", 10.262, 23.0, 0.005, 0.109, 6),
    ("INTT support skin", 11.8, 23.0, 0.001, 0.043, -1),
    ("TPC inner field cage", 20.7, DRIFT_LENGTH, 0.0183, 0.59, -1),
    ("TPC outer field cage", 77.0, DRIFT_LENGTH, 0.0183, 0.59, -1),
)
#: The names of the two field cages in MATERIAL: the TPC gas lies between them.
INNER_FIELD_CAGE = "TPC inner field cage"
OUTER_FIELD_CAGE = "TPC outer field cage"
#: Inner radius (cm) of the barrel electromagnetic calorimeter: a particle that reaches it is absorbed (its
#: backsplash is not simulated); one that turns back before it crosses the outer field cage again. [TDR]
EMCAL_INNER_RADIUS = 90.0
#: Mean excitation energy (GeV) and <Z/A> used for energy loss in the solid material (a Si/Kapton/Be average).
#: [SIM]
MATERIAL_I = 120e-9
MATERIAL_Z_OVER_A = 0.49
#: Silicon cluster resolution (cm): MVTX pixels ~5 um; INTT strips ~23 um in r-phi and ~0.5 cm in z (approximate).
#: [SIM]
MVTX_SIGMA = 0.0005
INTT_SIGMA_RPHI = 0.0023
INTT_SIGMA_Z = 0.5

# --------------------------------------------------------------------------------------------------------------
# Energy to ADC [CS] g4tpc/PHG4TpcElectronDrift.cc, PHG4TpcPadPlaneReadout.cc, PHG4TpcDigitizer.cc,
# offline/packages/tpc/TpcClusterizer.h; docs/physics.md §9
# --------------------------------------------------------------------------------------------------------------
#: ADC counts per keV of ionization: 28.4 e/keV x gain 1400 / 279.7 e per ADC = 142 ADC/keV. [DER]
ADC_PER_KEV = 142.0
#: Global factor tuned so the simulated cluster ADC has the release's mean (253) and spread (269):
#: it stands for the charge lost below the per-bin threshold and outside the clusterizer window. [SIM], [FM]
ADC_SCALE = 0.42
#: Cluster ADC threshold: clusters below it are not formed (cluster sum must be >= 5, seed > 11).
#: [CS] offline/packages/tpc/TpcClusterizer.h
ADC_CLUSTER_MIN = 11.0
#: 10-bit ADC saturation per time bin (1023 minus pedestal 74.4); a cluster covers at most a 7 x 11 window.
#: [CS] g4tpc/PHG4TpcDigitizer.cc, offline/packages/tpc/TpcClusterizer.h
ADC_BIN_MAX = 1023.0 - 74.4

# --------------------------------------------------------------------------------------------------------------
# Published event statistics of the TPCpp-10M release [FM] Zenodo 10.5281/zenodo.16970029, paper text of Fig. 10
# and 11; docs/physics.md §12a (`fm4npp-data stats --compare release` sets a simulation beside them)
# --------------------------------------------------------------------------------------------------------------
#: The labeled train split: 70,000 events holding 60.29M TPC spacepoints.
RELEASE_TRAIN_EVENTS = 70_000
RELEASE_TRAIN_SPACEPOINTS = 60_290_000
#: Mean TPC spacepoints per event of the labeled train split: 60.29M / 70,000 = 861.3. [DER]
RELEASE_SPACEPOINTS_PER_EVENT = RELEASE_TRAIN_SPACEPOINTS / RELEASE_TRAIN_EVENTS
#: Fraction of the spacepoints that are noise (truth particle below NOISE_CUT): about 10.7 %.
RELEASE_NOISE_FRACTION = 0.107
#: Spacepoints per event "from a few hundred to tens of thousands" and truth tracks per event "from under ten up
#: to nearly one hundred" (paper, Fig. 10 text): the text's words as numbers, not measured extremes.
RELEASE_SPACEPOINTS_RANGE = (200, 20_000)
RELEASE_TRACKS_RANGE = (10, 100)

# --------------------------------------------------------------------------------------------------------------
# Fast-simulation controls [SIM] (not sPHENIX facts: choices of this project; docs/physics.md §13)
# --------------------------------------------------------------------------------------------------------------
#: Smallest delta-electron kinetic energy (GeV) produced explicitly; softer ones stay in the continuous loss.
DELTA_T_MIN = 0.5e-3
#: Knock-on electrons between this kinetic energy (GeV) and DELTA_T_MIN are absorbed in the pad-row cluster where
#: they are made (range below a few mm); one that deposits more than the track owns the cluster's truth label,
#: as the sPHENIX evaluator labels a cluster by the particle that deposited most: more than the track's most
#: probable loss in the row (the rest of its Landau tail is those knock-ons). They make most of the noise class, as
#: the FM4NPP paper says of its data ("primarily delta electrons"). 1 keV: Geant4's lowest production threshold
#: (990 eV), below which its knock-ons stay in the track's continuous loss. [SIM]
DELTA_T_LABEL = 1.0e-6
#: Most energy (GeV) an absorbed knock-on electron leaves inside one cluster window.
DELTA_ABSORBED_MAX = 4e-6
#: Largest cluster ADC sum: a few saturated time bins (per-bin 10-bit ADC less pedestal).
ADC_CLUSTER_MAX = 2.0 * ADC_BIN_MAX
#: Energy loss and scattering in the gas are applied every this many cm of path (and at every material layer).
GAS_UPDATE_PATH = 10.0
#: ... or every this fraction of the particle's remaining range, whichever is shorter: a particle about to stop loses
#: its energy in steps small enough for its dE/dx, which rises as it slows.
GAS_UPDATE_RANGE_FRACTION = 0.1
#: A particle is followed for at most this path length (cm): the distance light travels in the drift time
#: (13.55 us x 29.98 cm/ns), after which a looper's clusters fall outside the event's readout. Loopers in the gas
#: range out well before (a 30 MeV electron after about 90 m). [DER]
MAX_PATH_LENGTH = DRIFT_TIME * 29.9792458
#: Particles below this kinetic energy (GeV) stop (range out) and deposit what they have left.
STOP_KINETIC_ENERGY = 20e-6
#: Fraction of TPC clusters whose truth cluster the evaluator fails to match (their g-columns are NaN in
#: ntp_cluster): a small number chosen so that every consumer meets unmatched clusters.
TRUTH_UNMATCHED_FRACTION = 0.002
#: Long-lived weakly decaying hadrons (tau0 > 10 mm): their decay products are Geant4-style secondaries.
#: K0S, Lambda, Sigma+, Sigma-, Xi-, Xi0, Omega-. [PDG] particle listings
LONG_LIVED_PDG = (310, 3122, 3222, 3112, 3312, 3322, 3334)


def layer_module(layer_index: np.ndarray | int) -> np.ndarray | int:
    """Module 0, 1, 2 of a TPC layer index 0..47."""
    return np.asarray(layer_index) // LAYERS_PER_MODULE


def curvature_radius(pt: np.ndarray | float) -> np.ndarray | float:
    """Helix radius (cm) in the solenoid for transverse momentum pt (GeV/c), unit charge."""
    return np.asarray(pt) / (C_LIGHT_FIELD * B_FIELD) * 100.0
