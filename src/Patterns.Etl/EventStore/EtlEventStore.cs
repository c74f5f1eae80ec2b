using System.Buffers;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;
using Patterns.Storage;

namespace Patterns.Etl;

/// <summary>The event store as an ETL target: rows become events appended to streams.</summary>
public static class EtlEventStore
{
    /// <summary>The document collection that holds the bookmarks of event-store loads (one document per job and partition).</summary>
    public const string BookmarkCollection = "patterns_etl_bookmarks";

    /// <summary>The document collection that holds the rows quarantined by event-store loads.</summary>
    public const string QuarantineCollection = "patterns_etl_quarantine";

    /// <summary>
    /// Appends each row as an event to a stream of the event store registered with <c>AddEventSourcing</c>. Each batch is
    /// one unit of work: its events (in row order, in the log and in each stream), the source's bookmark and the rows quarantined
    /// before it commit together or not at all, so a run that failed or was killed resumes after the last committed batch
    /// and appends nothing twice.
    /// </summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="services">The application's services: the store with units of work and documents (SQLite, PostgreSQL, in-memory) and the registered event types.</param>
    /// <param name="streamId">Gets the stream a row's event goes to.</param>
    /// <param name="event">Makes a row's event: a registered event type (or an <see cref="EventData"/> carrying one, to set its id or headers).</param>
    /// <param name="name">The sink's name (the default job name).</param>
    /// <returns>The sink.</returns>
    /// <exception cref="InvalidOperationException">Event sourcing is not registered, or its store has no units of work or documents.</exception>
    public static EtlSink<T> Append<T>(IServiceProvider services, Func<T, string> streamId, Func<T, object> @event, string name = "event-store")
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(streamId);
        ArgumentNullException.ThrowIfNull(@event);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var types = services.GetService<EventTypeMap>()
            ?? throw new InvalidOperationException("EtlEventStore.Append needs event sourcing: call AddEventSourcing(...) and register the event types.");
        var units = services.GetService<IUnitOfWorkStorage>();
        var documents = services.GetService<IDocumentStorage>();
        if (units is null || documents is null)
        {
            throw new InvalidOperationException(
                "EtlEventStore.Append needs a store with units of work and documents (IUnitOfWorkStorage and IDocumentStorage), to commit each batch's events with its bookmark: use es.UseSqlite(...), es.UsePostgres(...) or es.UseInMemory().");
        }

        var inline = services.GetService<InlineProjector>() is { Entries.Count: > 0 } projector ? projector : null;
        var time = services.GetService<TimeProvider>() ?? TimeProvider.System;
        return new EventStoreSink<T>(name, new EventStoreTarget(types, units, documents, inline, time, units as IInboxStore), streamId, @event);
    }
}

/// <summary>What the event-store sink writes through.</summary>
internal sealed record EventStoreTarget(EventTypeMap Types, IUnitOfWorkStorage Units, IDocumentStorage Documents, InlineProjector? Inline, TimeProvider Time, IInboxStore? Inbox);

internal sealed class EventStoreSink<T>(string name, EventStoreTarget target, Func<T, string> streamId, Func<T, object> toEvent) : EtlSink<T>
{
    public override string Name => name;

    public override int PreferredBatchSize => 1_000;

    public override ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) =>
        new(new Writer(this, context));

    private sealed class Writer(EventStoreSink<T> sink, EtlSinkContext context) : EtlSinkWriter<T>
    {
        private readonly string _bookmarkId = context.Job + "|" + context.Partition;
        private long _quarantined;

        public override bool StoresBookmarks => true;

        public override bool StoresQuarantine => true;

        /// <summary>Gets a value indicating whether the store has an inbox: the messages a batch covers are claimed in it, in the batch's unit of work.</summary>
        public override bool StoresConsumed => sink.Target.Inbox is not null;

        /// <summary>Gets the inbox consumer of this job and partition (the kernel's inbox pruner removes its old entries, after <c>PatternsOptions.InboxRetention</c>).</summary>
        private string Consumer => "etl:" + _bookmarkId;

        /// <summary>One inbox lookup for the whole group (<see cref="IInboxStore.ContainsManyAsync"/>: one round trip on PostgreSQL).</summary>
        public override ValueTask<IReadOnlySet<string>> ReadConsumedAsync(IReadOnlyList<string> messageIds, CancellationToken cancellationToken) =>
            sink.Target.Inbox is { } inbox && messageIds.Count > 0
                ? inbox.ContainsManyAsync(Consumer, messageIds, cancellationToken)
                : new(new HashSet<string>(StringComparer.Ordinal));

        public override async ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken)
        {
            var bytes = await sink.Target.Documents.GetAsync(EtlEventStore.BookmarkCollection, _bookmarkId, cancellationToken).ConfigureAwait(false);
            return bytes is null ? null : BookmarkJson.Read(bytes, _bookmarkId);
        }

        public override async ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken)
        {
            var work = new UnitOfWork();
            AppendEvents(work, rows.Span);
            await CommitAsync(work, commit, cancellationToken).ConfigureAwait(false);
            return new EtlLoadCounts(rows.Length, 0, 0);
        }

        public override async ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken)
        {
            await CommitAsync(new UnitOfWork(), commit, cancellationToken).ConfigureAwait(false);
            return default;
        }

        /// <summary>One append per run of consecutive rows of the same stream, so the log holds the events in row order.</summary>
        private void AppendEvents(UnitOfWork work, ReadOnlySpan<T> rows)
        {
            var timestamp = sink.Target.Time.GetUtcNow();
            string? stream = null;
            var events = new List<EventData>();
            foreach (var row in rows)
            {
                var next = sink.StreamId(row);
                if (string.IsNullOrEmpty(next))
                {
                    throw new InvalidOperationException($"ETL event-store sink '{sink.Name}': the stream id of a row is empty ({row}).");
                }

                if (stream is not null && !string.Equals(stream, next, StringComparison.Ordinal))
                {
                    Append(work, stream, events, timestamp);
                    events = [];
                }

                stream = next;
                var made = sink.ToEvent(row) ?? throw new InvalidOperationException($"ETL event-store sink '{sink.Name}': the event of a row of stream '{next}' is null.");
                events.Add(EventStoreExtensions.ToEventData(made));
            }

            if (stream is not null)
            {
                Append(work, stream, events, timestamp);
            }
        }

        private void Append(UnitOfWork work, string stream, List<EventData> events, DateTimeOffset timestamp)
        {
            var target = sink.Target;
            var serialized = new SerializedEvent[events.Count];
            for (var i = 0; i < serialized.Length; i++)
            {
                serialized[i] = target.Types.Serialize(events[i], timestamp);
            }

            work.Append(stream, ExpectedVersion.Any, serialized, target.Inline?.For(stream, events));
        }

        private async ValueTask CommitAsync(UnitOfWork work, EtlCommit commit, CancellationToken cancellationToken)
        {
            if (commit.Bookmark is { } bookmark)
            {
                work.Upsert(EtlEventStore.BookmarkCollection, _bookmarkId, BookmarkJson.Write(bookmark, context.Job, context.Partition));
            }

            if (StoresConsumed)
            {
                foreach (var id in commit.Consumed)
                {
                    work.ClaimInbox(Consumer, id);
                }
            }

            foreach (var row in commit.Quarantined)
            {
                // Ids sort in quarantine order within a run.
                var id = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{context.Job}|{row.RunId}|{++_quarantined:D12}");
                work.Upsert(EtlEventStore.QuarantineCollection, id, QuarantineJson(row));
            }

            if (!work.IsEmpty)
            {
                await sink.Target.Units.CommitAsync(work, cancellationToken).ConfigureAwait(false);
            }
        }

        private static byte[] QuarantineJson(QuarantinedRow row)
        {
            var buffer = new ArrayBufferWriter<byte>(256);
            using (var writer = new Utf8JsonWriter(buffer))
            {
                EtlQuarantine.WriteJson(writer, row);
            }

            return buffer.WrittenSpan.ToArray();
        }
    }

    private EventStoreTarget Target => target;

    private Func<T, string> StreamId => streamId;

    private Func<T, object> ToEvent => toEvent;
}

/// <summary>A bookmark as a small JSON document.</summary>
internal static class BookmarkJson
{
    public static byte[] Write(EtlBookmark bookmark, string job, string partition)
    {
        var buffer = new ArrayBufferWriter<byte>(128);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("job", job);
            writer.WriteString("partition", partition);
            writer.WriteNumber("offset", bookmark.Offset);
            writer.WriteNumber("line", bookmark.Line);
            writer.WriteString("watermark", bookmark.Watermark);
            writer.WriteBoolean("completed", bookmark.Completed);
            writer.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    public static EtlBookmark Read(byte[] json, string id)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            var root = document.RootElement;
            return new EtlBookmark(
                root.GetProperty("offset").GetInt64(),
                root.GetProperty("line").GetInt64(),
                root.GetProperty("watermark").GetString(),
                root.GetProperty("completed").GetBoolean());
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"The ETL bookmark '{id}' in the document collection '{EtlEventStore.BookmarkCollection}' is not a valid bookmark: {ex.Message}", ex);
        }
    }
}
