"""Models of the real-world failure cases (../shared/cases/), app label "app"."""
