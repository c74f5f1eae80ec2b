namespace Patterns.Etl;

/// <summary>The checks every table sink makes of its options, reported all at once.</summary>
internal static class EtlSinkValidation
{
    public static void Validate<T>(List<string> errors, string what, string table, EtlSchema<T>? schema, EtlLoadMode mode, IReadOnlyList<string> key, int batchSize, bool deleteMarkers = false)
    {
        if (string.IsNullOrWhiteSpace(table))
        {
            errors.Add($"{what}.Table is required.");
        }

        if (schema is null)
        {
            errors.Add($"{what}.Schema is required.");
        }
        else if (schema.Columns.Count == 0)
        {
            errors.Add($"{what}.Schema has no columns.");
        }

        if (mode != EtlLoadMode.Append && key.Count == 0)
        {
            errors.Add($"{what}.Key is required in {mode} mode: name the key column(s).");
        }

        if (schema is not null)
        {
            foreach (var name in key)
            {
                if (!schema.Columns.Any(c => string.Equals(c.Name, name, StringComparison.OrdinalIgnoreCase)))
                {
                    errors.Add($"{what}.Key names '{name}', which is not a column of the schema ({string.Join(", ", schema.Columns.Select(c => c.Name))}).");
                }
            }
        }

        if (deleteMarkers && mode == EtlLoadMode.Append)
        {
            errors.Add($"{what}.Deleted marks rows to delete by key, which needs Merge or Full mode (was Append).");
        }

        if (batchSize is < 1 or > 1_000_000)
        {
            errors.Add($"{what}.BatchSize must be between 1 and 1,000,000 (was {batchSize}).");
        }
    }
}
