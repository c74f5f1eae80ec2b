using Patterns.Storage;

namespace Patterns.EventSourcing;

/// <summary>
/// Rebuilds into shadow collections: a rebuild writes <c>{collection}~rebuild</c> under its own checkpoint
/// (<c>{name}~rebuild</c>), and once the shadow has caught up with the log it replaces the live collections in one unit of
/// work (copy-swap). Until then the live read model is served as it was; readers never see an empty or half-built one.
/// </summary>
internal static class ProjectionRebuild
{
    /// <summary>The suffix of shadow collections and of the rebuild's checkpoint.</summary>
    public const string Suffix = "~rebuild";

    /// <summary>The document collection that records the rebuilds in progress, one document per projection.</summary>
    public const string StateCollection = "patterns.rebuilds";

    public static string Shadow(string name) => name + Suffix;

    /// <summary>The durable record that a rebuild is in progress: a process that restarts (or takes over) resumes it.</summary>
    public static ReadOnlyMemory<byte> State(string name, DateTimeOffset requestedAt)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(128);
        using (var writer = new System.Text.Json.Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("name", name);
            writer.WriteString("requestedAt", requestedAt);
            writer.WriteEndObject();
        }

        return buffer.WrittenMemory;
    }

    /// <summary>Clears the shadow collections, so a rebuild starts from an empty model.</summary>
    public static async ValueTask ClearShadowsAsync(IDocumentStorage documents, IEnumerable<string> collections, CancellationToken cancellationToken)
    {
        foreach (var collection in collections)
        {
            await documents.ClearAsync(Shadow(collection), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Adds the swap to <paramref name="work"/>: every live document is deleted and every shadow document is copied into
    /// its live collection and deleted from the shadow. The whole read model passes through the unit once.
    /// </summary>
    public static async ValueTask AddSwapAsync(UnitOfWork work, IDocumentStorage documents, IEnumerable<string> collections, CancellationToken cancellationToken)
    {
        foreach (var collection in collections)
        {
            await foreach (var (id, _) in documents.ListAsync(collection, cancellationToken).ConfigureAwait(false))
            {
                work.Delete(collection, id);
            }

            var shadow = Shadow(collection);
            await foreach (var (id, document) in documents.ListAsync(shadow, cancellationToken).ConfigureAwait(false))
            {
                // The last change to a document wins: the upsert replaces the delete above.
                work.Upsert(collection, id, document);
                work.Delete(shadow, id);
            }
        }
    }

    /// <summary>Commits a swap: in one unit of work (fenced by <paramref name="lease"/> when set), or step by step on a store without units.</summary>
    public static async ValueTask CommitSwapAsync(UnitOfWork work, EventProcessorServices services, Lease? lease, CancellationToken cancellationToken)
    {
        if (services.Units is { } units)
        {
            if (lease is not null)
            {
                work.RequireLease(lease);
            }

            await units.CommitAsync(work, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await ApplyWithoutUnitAsync(work, services.Documents, services.Checkpoints, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Commits a swap on a store without units of work: live upserts first, then live deletes, then checkpoints, then the
    /// rebuild record and the shadow deletes, so a crash part-way leaves the shadow and the record in place and the
    /// rebuild swaps again on restart. Not atomic: readers may see a mix of the two models during the swap.
    /// </summary>
    private static async ValueTask ApplyWithoutUnitAsync(UnitOfWork work, IDocumentStorage documents, ICheckpointStore checkpoints, CancellationToken cancellationToken)
    {
        var last = new Dictionary<(string Collection, string Id), DocumentChange>();
        foreach (var change in work.Documents)
        {
            last[(change.Collection, change.Id)] = change;
        }

        static bool IsBookkeeping(DocumentChange c) => c.Collection.EndsWith(Suffix, StringComparison.Ordinal) || c.Collection == StateCollection;

        foreach (var change in last.Values.Where(c => !c.IsDelete))
        {
            await documents.UpsertAsync(change.Collection, change.Id, change.Document, cancellationToken).ConfigureAwait(false);
        }

        foreach (var change in last.Values.Where(c => c.IsDelete && !IsBookkeeping(c)))
        {
            await documents.DeleteAsync(change.Collection, change.Id, cancellationToken).ConfigureAwait(false);
        }

        foreach (var checkpoint in work.Checkpoints)
        {
            await checkpoints.SaveAsync(checkpoint.Name, checkpoint.Position, cancellationToken).ConfigureAwait(false);
        }

        foreach (var change in last.Values.Where(c => c.IsDelete && IsBookkeeping(c)).OrderBy(c => c.Collection == StateCollection ? 0 : 1))
        {
            await documents.DeleteAsync(change.Collection, change.Id, cancellationToken).ConfigureAwait(false);
        }
    }
}

/// <summary>
/// The document writer a projection sees: while a rebuild runs, its declared collections are redirected to their
/// shadows (reads too, so a projection that loads its documents sees the rebuilt ones); other collections pass through.
/// </summary>
internal sealed class ShadowWriter(IDocumentWriter inner, IEnumerable<string> collections) : IDocumentWriter
{
    private readonly HashSet<string> _collections = new(collections, StringComparer.Ordinal);

    /// <summary>Gets or sets whether the declared collections go to their shadows.</summary>
    public bool Redirect { get; set; }

    public ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default) =>
        inner.GetAsync(Map(collection), id, cancellationToken);

    public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default) =>
        inner.UpsertAsync(Map(collection), id, document, cancellationToken);

    public ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default) =>
        inner.DeleteAsync(Map(collection), id, cancellationToken);

    /// <summary>Gets the collection a write to <paramref name="collection"/> goes to: its shadow while redirecting a declared collection.</summary>
    public string Map(string collection) =>
        Redirect && collection is not null && _collections.Contains(collection) ? ProjectionRebuild.Shadow(collection) : collection!;
}

/// <summary>
/// Holds this process's appends that run inline projections while an inline rebuild swaps its shadow in: appends enter
/// and leave freely while it is open (a lock and a counter each); closing it makes new appends wait and waits for the
/// ones in flight, so the rebuild's last catch-up sees every event this process committed before the swap, and every
/// event after the swap is projected inline into the new model.
/// </summary>
internal sealed class AppendGate
{
    private readonly Lock _lock = new();
    private int _active;
    private TaskCompletionSource? _reopened;
    private TaskCompletionSource? _drained;

    /// <summary>Enters for one append; waits while the gate is closed.</summary>
    public async ValueTask EnterAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            Task reopened;
            lock (_lock)
            {
                if (_reopened is null)
                {
                    _active++;
                    return;
                }

                reopened = _reopened.Task;
            }

            await reopened.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Leaves after one append.</summary>
    public void Exit()
    {
        TaskCompletionSource? drained = null;
        lock (_lock)
        {
            if (--_active == 0)
            {
                drained = _drained;
                _drained = null;
            }
        }

        drained?.TrySetResult();
    }

    /// <summary>Closes the gate (one closer at a time) and waits for the appends in flight to leave.</summary>
    public async ValueTask CloseAsync(CancellationToken cancellationToken)
    {
        Task drained;
        lock (_lock)
        {
            _reopened = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (_active == 0)
            {
                return;
            }

            _drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            drained = _drained.Task;
        }

        try
        {
            await drained.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Open();
            throw;
        }
    }

    /// <summary>Opens the gate: the waiting appends go on.</summary>
    public void Open()
    {
        TaskCompletionSource? reopened;
        lock (_lock)
        {
            reopened = _reopened;
            _reopened = null;
            _drained = null;
        }

        reopened?.TrySetResult();
    }
}
