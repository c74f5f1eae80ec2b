using System.Text;
using System.Text.Json;

namespace Patterns.Etl;

/// <summary>
/// Where quarantined rows go when the sink does not store them itself. Database sinks store them in a table, in the
/// same transaction as the batch they precede; a file quarantine is appended after each batch.
/// </summary>
public abstract class EtlQuarantine
{
    /// <summary>A JSON-lines file, appended to (one object per row: runId, job, stage, source, line, offset, raw, column, error).</summary>
    /// <param name="path">The file.</param>
    /// <returns>The quarantine.</returns>
    public static EtlQuarantine File(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        return new FileQuarantine(path);
    }

    /// <summary>Stores rows.</summary>
    /// <param name="rows">The rows.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task that completes when they are stored.</returns>
    public abstract ValueTask WriteAsync(IReadOnlyList<QuarantinedRow> rows, CancellationToken cancellationToken);

    /// <summary>Writes one quarantined row as a JSON object (the file format; also usable by custom quarantines).</summary>
    /// <param name="writer">The writer.</param>
    /// <param name="row">The row.</param>
    public static void WriteJson(Utf8JsonWriter writer, QuarantinedRow row)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(row);
        writer.WriteStartObject();
        writer.WriteString("runId", row.RunId);
        writer.WriteString("job", row.Job);
        writer.WriteString("stage", row.Stage);
        writer.WriteString("source", row.Source);
        writer.WriteNumber("line", row.Line);
        writer.WriteNumber("offset", row.Offset);
        writer.WriteString("raw", row.Raw);
        writer.WriteString("column", row.Column);
        writer.WriteString("error", row.Error);
        writer.WriteEndObject();
    }
}

internal sealed class FileQuarantine(string path) : EtlQuarantine
{
    public override async ValueTask WriteAsync(IReadOnlyList<QuarantinedRow> rows, CancellationToken cancellationToken)
    {
        if (rows.Count == 0)
        {
            return;
        }

        var buffer = new MemoryStream();
        foreach (var row in rows)
        {
            using (var writer = new Utf8JsonWriter(buffer))
            {
                WriteJson(writer, row);
            }

            buffer.WriteByte((byte)'\n');
        }

        var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read);
        await using (stream.ConfigureAwait(false))
        {
            await stream.WriteAsync(buffer.GetBuffer().AsMemory(0, (int)buffer.Length), cancellationToken).ConfigureAwait(false);
            await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
    }
}

/// <summary>The default: rows kept in memory and returned with the run's result (bounded by the error budget).</summary>
internal sealed class MemoryQuarantine : EtlQuarantine
{
    private readonly List<QuarantinedRow> _rows = [];

    public IReadOnlyList<QuarantinedRow> Rows
    {
        get
        {
            lock (_rows)
            {
                return [.. _rows];
            }
        }
    }

    public override ValueTask WriteAsync(IReadOnlyList<QuarantinedRow> rows, CancellationToken cancellationToken)
    {
        lock (_rows)
        {
            _rows.AddRange(rows);
        }

        return default;
    }
}

internal static class QuarantineText
{
    /// <summary>Keeps raw text of a quarantined row within 64 KiB, so a malformed file cannot blow up the quarantine.</summary>
    public static string? Clip(string? raw) => raw is { Length: > 65_536 } ? string.Concat(raw.AsSpan(0, 65_536), "…") : raw;

    public static string Describe(Exception exception)
    {
        var text = new StringBuilder(exception.Message);
        for (var inner = exception.InnerException; inner is not null; inner = inner.InnerException)
        {
            text.Append(" (").Append(inner.Message).Append(')');
        }

        return text.ToString();
    }
}
