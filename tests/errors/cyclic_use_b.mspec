use "cyclic_use_a.mspec"
