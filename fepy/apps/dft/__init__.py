"""Classical density functional theory: functionals, simulation data and neural functionals (kT, σ units)."""
