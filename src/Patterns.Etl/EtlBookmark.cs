namespace Patterns.Etl;

/// <summary>
/// Where a source stands: the rows it has consumed (a file's row offset, an event position), the line of the last
/// row, and for SQL sources the watermark (the largest value of the watermark column loaded). A sink that supports
/// bookmarks commits it in the same transaction as each batch, so a run resumes exactly after the last loaded batch.
/// </summary>
/// <param name="Offset">The rows consumed from the source (data rows for files, the log position for events).</param>
/// <param name="Line">The physical line of the last row consumed (files), or 0.</param>
/// <param name="Watermark">The watermark value in invariant text (SQL sources), or <see langword="null"/>.</param>
/// <param name="Completed"><see langword="true"/> when the source was read to its end: re-running the partition changes nothing.</param>
public sealed record EtlBookmark(long Offset, long Line, string? Watermark, bool Completed)
{
    /// <summary>Gets the bookmark of a source that has not been read.</summary>
    public static EtlBookmark Start { get; } = new(0, 0, null, false);
}

/// <summary>One row set aside because it could not be read or failed a rule, with everything needed to find and fix it.</summary>
/// <param name="RunId">The run that set it aside.</param>
/// <param name="Job">The job (pipeline) name.</param>
/// <param name="Stage">The stage that rejected it (<c>source</c>, or the name of a <c>Validate</c> stage).</param>
/// <param name="Source">The source's name (for files, the path).</param>
/// <param name="Line">The physical line (files) or row number of the row in the source.</param>
/// <param name="Offset">The row's offset in the source (its data row index for files).</param>
/// <param name="Raw">The raw text of the row (for rows that passed parsing, the record formatted as CSV).</param>
/// <param name="Column">The column at fault, when known.</param>
/// <param name="Error">What was wrong.</param>
public sealed record QuarantinedRow(string RunId, string Job, string Stage, string Source, long Line, long Offset, string? Raw, string? Column, string Error);

/// <summary>Rows changed in the target by one batch or one run.</summary>
/// <param name="Inserted">Rows inserted (appended or new on merge).</param>
/// <param name="Updated">Rows whose values changed on merge (rows that were equal are not counted and not written).</param>
/// <param name="Deleted">Rows deleted (full mode, or by delete markers on merge).</param>
public readonly record struct EtlLoadCounts(long Inserted, long Updated, long Deleted)
{
    /// <summary>Adds two counts.</summary>
    /// <param name="left">The first.</param>
    /// <param name="right">The second.</param>
    /// <returns>The sum.</returns>
    public static EtlLoadCounts operator +(EtlLoadCounts left, EtlLoadCounts right) =>
        new(left.Inserted + right.Inserted, left.Updated + right.Updated, left.Deleted + right.Deleted);

    /// <summary>Adds two counts.</summary>
    /// <param name="other">The other counts.</param>
    /// <returns>The sum.</returns>
    public EtlLoadCounts Add(EtlLoadCounts other) => this + other;

    /// <summary>Gets the rows changed in total.</summary>
    public long Changed => Inserted + Updated + Deleted;
}

/// <summary>How a sink loads rows into its target.</summary>
public enum EtlLoadMode
{
    /// <summary>Inserts every row.</summary>
    Append,

    /// <summary>Inserts new keys and updates existing keys whose values differ (real UPDATEs: identities and foreign keys survive); through a staging table.</summary>
    Merge,

    /// <summary>Merge, then deletes target rows whose keys the source did not have.</summary>
    Full,
}
