using System.Globalization;
using System.Text;
using Patterns.Storage;

namespace Patterns.Sqlite.CrashHost;

/// <summary>
/// The store as <see cref="CrashHarness"/> drives it, except that each append commits as a unit of work that also
/// writes the stream's version to the document <c>crash/&lt;stream&gt;</c> and enqueues an outbox message to the stream
/// whose payload is the appended event ids (16 bytes each): after a kill, every event must have its outbox message and
/// every document its stream's version, or the unit was not atomic.
/// </summary>
internal sealed class UnitAppends(SqliteEventStore store) : IEventStorage
{
    public EventStorageCapabilities Capabilities => store.Capabilities;

    public async ValueTask<AppendResult> AppendAsync(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, InlineProjection? inlineProjection = null, CancellationToken cancellationToken = default)
    {
        var expected = expectedVersion.IsExact ? expectedVersion.Value : 0; // the harness always appends at an exact version
        var ids = events.SelectMany(e => e.EventId.ToByteArray()).ToArray();
        var work = new UnitOfWork()
            .Append(streamId, expectedVersion, events, inlineProjection)
            .Upsert("crash", streamId, Encoding.UTF8.GetBytes((expected + events.Count).ToString(CultureInfo.InvariantCulture)))
            .Enqueue(new OutboxMessage(streamId, OutboxMessageKind.Publish, ids));
        return (await store.CommitAsync(work, cancellationToken).ConfigureAwait(false)).Appends[0];
    }

    public IAsyncEnumerable<StoredEvent> ReadStreamAsync(string streamId, ReadDirection direction = ReadDirection.Forward, long? fromVersion = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
        store.ReadStreamAsync(streamId, direction, fromVersion, maxCount, cancellationToken);

    public IAsyncEnumerable<StoredEvent> ReadAllAsync(long afterPosition = 0, EventFilter? filter = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
        store.ReadAllAsync(afterPosition, filter, maxCount, cancellationToken);

    public ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default) => store.GetStreamStateAsync(streamId, cancellationToken);

    public ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default) => store.GetHeadPositionAsync(cancellationToken);

    public ValueTask DeleteStreamAsync(string streamId, ExpectedVersion expectedVersion, StreamDeleteMode mode = StreamDeleteMode.Soft, CancellationToken cancellationToken = default) =>
        store.DeleteStreamAsync(streamId, expectedVersion, mode, cancellationToken);

    public ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default) => store.TruncateStreamAsync(streamId, beforeVersion, cancellationToken);

    public ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken) => store.WaitForEventsAsync(afterPosition, cancellationToken);
}
