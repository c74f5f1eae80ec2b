namespace Patterns.Etl;

/// <summary>Makes a record from a source row through its schema's create function; a field that cannot be read makes the row a quarantine entry instead.</summary>
internal static class EtlRecordFactory
{
    public static bool TryCreate<T>(Func<EtlFieldReader, T> create, EtlFieldReader fields, out T record, out string? column, out string? error)
    {
        try
        {
            record = create(fields);
            column = null;
            error = null;
            return true;
        }
        catch (EtlFieldException ex)
        {
            record = default!;
            column = ex.Column;
            error = ex.Message;
            return false;
        }
        catch (Exception ex) when (ex is FormatException or OverflowException or ArgumentException or InvalidOperationException)
        {
            record = default!;
            column = null;
            error = QuarantineText.Describe(ex);
            return false;
        }
    }
}
