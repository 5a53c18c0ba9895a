# Installed as itk/Configuration/SAMConvex_snake_case.py: the functional names itk exposes.
snake_case_functions = ('samconvex_registration',)
