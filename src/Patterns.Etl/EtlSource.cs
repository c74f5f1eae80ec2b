using System.Runtime.CompilerServices;

namespace Patterns.Etl;

/// <summary>
/// Where rows come from. A source is a description: each run opens it with an <see cref="EtlSourceContext"/> that
/// says where to resume, and reads it as an async sequence pulled one row at a time (so a slow sink holds the source
/// back). While it reads, it reports each row's position on the context, and rows it cannot read go to quarantine
/// through <see cref="EtlSourceContext.Quarantine"/>.
/// </summary>
/// <typeparam name="T">The record type.</typeparam>
public abstract class EtlSource<T>
{
    /// <summary>Gets the source's name, recorded in quarantine entries, logs and metrics (for files, the path).</summary>
    public abstract string Name { get; }

    /// <summary>Gets a value indicating whether the source reports positions it can resume from (<see cref="EtlSourceContext.Resume"/>).</summary>
    public virtual bool CanResume => false;

    /// <summary>
    /// Gets a value indicating whether the source grows (a watermark query, an event log): a run whose bookmark says the
    /// source was read to its end resumes from it and loads what is new, instead of changing nothing.
    /// </summary>
    public virtual bool Incremental => false;

    /// <summary>Gets the most messages a transport source holds unacknowledged until the batches that include them commit; null for other sources.</summary>
    internal virtual int? MaxUnacknowledged => null;

    /// <summary>Reads the rows.</summary>
    /// <param name="context">The run's context: where to resume, where to report positions and bad rows.</param>
    /// <param name="cancellationToken">Stops reading.</param>
    /// <returns>The rows.</returns>
    public abstract IAsyncEnumerable<T> ReadAsync(EtlSourceContext context, CancellationToken cancellationToken);
}

/// <summary>What a source sees of its run: where to resume, and where to report progress and bad rows.</summary>
/// <remarks>Used by one source on the pipeline's task: not thread-safe.</remarks>
public sealed class EtlSourceContext
{
    private readonly EtlRun _run;
    private readonly string _source;

    internal EtlSourceContext(EtlRun run, EtlBookmark resume, string source)
    {
        _run = run;
        _source = source;
        Resume = resume;
        Offset = resume.Offset;
        Line = resume.Line;
        Watermark = resume.Watermark;
    }

    /// <summary>Gets the run's id.</summary>
    public string RunId => _run.RunId;

    /// <summary>Gets the run the context belongs to.</summary>
    internal EtlRun Run => _run;

    /// <summary>Gets the partition being loaded, or <see langword="null"/>.</summary>
    public string? Partition => _run.Partition;

    /// <summary>Gets where to resume: the bookmark committed with the last loaded batch, or <see cref="EtlBookmark.Start"/>.</summary>
    public EtlBookmark Resume { get; }

    /// <summary>Gets or sets the rows consumed so far, including the current one (files: data rows; events: the log position).</summary>
    public long Offset { get; set; }

    /// <summary>Gets or sets the physical line of the current row (files), for quarantine entries.</summary>
    public long Line { get; set; }

    /// <summary>Gets or sets the watermark of the current row (SQL sources), formatted when a bookmark is taken.</summary>
    public object? Watermark { get; set; }

    /// <summary>Gets or sets the bytes read so far, for progress.</summary>
    public long BytesRead { get; set; }

    /// <summary>Gets or sets the source's total size in bytes when known, for the progress ETA.</summary>
    public long? Length { get; set; }

    /// <summary>Records a row the source could not read; it is quarantined and counted against the error budget.</summary>
    /// <param name="raw">The row's raw text.</param>
    /// <param name="column">The column at fault, when known.</param>
    /// <param name="error">What was wrong.</param>
    /// <exception cref="EtlErrorBudgetExceededException">The run's error budget is exhausted.</exception>
    public void Quarantine(string? raw, string? column, string error)
    {
        _run.RowsRead++;
        _run.Quarantine(new QuarantinedRow(_run.RunId, _run.Job, "source", _source, Line, Offset, raw, column, error));
    }

    internal EtlBookmark Capture(bool completed) =>
        new(Offset, Line, Watermark switch
        {
            null => null,
            DateTime time => time.ToUniversalTime().ToString("O", System.Globalization.CultureInfo.InvariantCulture),
            IFormattable formattable => formattable.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
            var other => other.ToString(),
        }, completed);
}

/// <summary>Any async sequence as a source: not resumable, positions count rows.</summary>
internal sealed class AsyncEnumerableSource<T>(IAsyncEnumerable<T> rows, string name) : EtlSource<T>
{
    public override string Name => name;

    public override async IAsyncEnumerable<T> ReadAsync(EtlSourceContext context, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await foreach (var row in rows.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            context.Offset++;
            context.Line = context.Offset;
            yield return row;
        }
    }
}
