using Parquet;
using Parquet.Schema;
using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

public sealed class ParquetTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task CsvToParquetAndBack_WritesOneRowGroupPerBatch_AndReadsEveryRowBack()
    {
        var csv = _dir.File("orders.csv");
        var bad = OrderData.Write(csv, 5_000, badEvery: 100);
        var parquet = _dir.File("orders.parquet");

        var written = await Etl.From(Csv.Read<Order>(csv)).To(ParquetFiles.Write<Order>(parquet, new ParquetWriteOptions { RowGroupRows = 1_000 })).RunAsync();

        written.RowsLoaded.Should().Be(4_950);
        written.RowsQuarantined.Should().Be(bad.Count);
        File.Exists(parquet).Should().BeTrue();
        Directory.GetFiles(_dir.Path, "*.tmp").Should().BeEmpty();
        await using (var reader = await ParquetReader.CreateAsync(parquet))
        {
            reader.RowGroupCount.Should().Be(5);
            reader.Schema.DataFields.Select(f => f.Name).Should().Equal(Order.Schema.Columns.Select(c => c.Name));
        }

        var back = new ListSink<Order>();
        var read = await Etl.From(ParquetFiles.Read<Order>(parquet)).To(back).RunAsync();

        read.RowsRead.Should().Be(4_950);
        read.RowsQuarantined.Should().Be(0);
        back.Rows.Should().Equal(await Db.ReadCsvAsync(csv));
        back.Rows.Should().OnlyContain(o => o.PlacedAt.Kind == DateTimeKind.Utc);
        back.Rows.Count(o => o.Note == null).Should().BeGreaterThan(0, "null strings survive the round trip");
    }

    [Fact]
    public async Task ParquetToSqliteToParquet_RoundTripsThroughTheExistingSinks()
    {
        var orders = SqliteLoadTests.Generated(3_000);
        var first = _dir.File("first.parquet");
        await Etl.From(orders).To(ParquetFiles.Write<Order>(first)).RunAsync(new EtlRunOptions { BatchSize = 700 });

        var loaded = await Etl.From(ParquetFiles.Read<Order>(first)).To(Sqlite.Append<Order>(_dir.Sqlite(), "orders")).RunAsync(new EtlRunOptions { BatchSize = 500 });
        Db.ReadSqlite(_dir.Sqlite()).Should().Equal(orders);
        loaded.RowsInserted.Should().Be(3_000);

        var second = _dir.File("second.parquet");
        await Etl.From(Sqlite.Query(_dir.Sqlite(), "SELECT id, customer_id, amount, placed_at, status, region, product, channel, note, email FROM orders ORDER BY id", Order.Schema))
            .To(ParquetFiles.Write<Order>(second))
            .RunAsync();
        var back = new ListSink<Order>();
        await Etl.From(ParquetFiles.Read<Order>(second)).To(back).RunAsync();
        back.Rows.Should().Equal(orders);

        var json = _dir.File("orders.jsonl");
        await Etl.From(ParquetFiles.Read<Order>(second)).To(JsonLines.Write(json, OrderJson.Default.Order)).RunAsync();
        var fromJson = new ListSink<Order>();
        await Etl.From(JsonLines.Read(json, OrderJson.Default.Order)).To(fromJson).RunAsync();
        fromJson.Rows.Should().Equal(orders);
    }

    [Fact]
    public async Task Stop_ThenResume_SkipsLoadedRowGroupsAndLoadsEachRowOnce()
    {
        var parquet = _dir.File("orders.parquet");
        var orders = SqliteLoadTests.Generated(6_000);
        await Etl.From(orders).To(ParquetFiles.Write<Order>(parquet, new ParquetWriteOptions { RowGroupRows = 1_000 })).RunAsync();
        var pipeline = Etl.From(ParquetFiles.Read<Order>(parquet)).To(Sqlite.Append<Order>(_dir.Sqlite(), "orders"), "parquet-resume");
        using var stop = new CancellationTokenSource();
        var progress = new SyncProgress(p =>
        {
            if (p.RowsLoaded >= 2_500)
            {
                stop.Cancel();
            }
        });

        var first = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 500, Progress = progress }, stop.Token);
        var second = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 500 });
        var third = await pipeline.RunAsync();

        first.Status.Should().Be(EtlRunStatus.Stopped);
        first.RowsLoaded.Should().BeInRange(2_500, 5_999);
        second.Status.Should().Be(EtlRunStatus.Completed);
        second.RowsRead.Should().Be(6_000 - first.RowsLoaded, "the resumed run reads only what the first did not load");
        (first.RowsLoaded + second.RowsLoaded).Should().Be(6_000);
        Db.ReadSqlite(_dir.Sqlite()).Should().Equal(orders);
        third.Status.Should().Be(EtlRunStatus.AlreadyCompleted);
    }

    [Fact]
    public async Task NotAParquetFile_FailsNamingTheFile()
    {
        var text = _dir.File("orders.parquet");
        await File.WriteAllTextAsync(text, "id,amount\n1,2\n");

        var run = () => Etl.From(ParquetFiles.Read<Order>(text)).To(new ListSink<Order>()).RunAsync();

        (await run.Should().ThrowAsync<InvalidDataException>()).Which.Message.Should().StartWith($"'{text}' is not a readable Parquet file: ");
    }

    [Fact]
    public async Task TruncatedFile_FailsNamingTheFile()
    {
        var parquet = _dir.File("orders.parquet");
        await Etl.From(SqliteLoadTests.Generated(2_000)).To(ParquetFiles.Write<Order>(parquet)).RunAsync();
        var bytes = await File.ReadAllBytesAsync(parquet);
        var truncated = _dir.File("truncated.parquet");
        await File.WriteAllBytesAsync(truncated, bytes[..(bytes.Length / 2)]);

        var run = () => Etl.From(ParquetFiles.Read<Order>(truncated)).To(new ListSink<Order>()).RunAsync();

        (await run.Should().ThrowAsync<InvalidDataException>()).Which.Message.Should().Contain(truncated);
    }

    [Fact]
    public async Task FileThatDoesNotMatchTheSchema_FailsNamingEachProblem()
    {
        var parquet = _dir.File("other.parquet");
        var schema = new ParquetSchema(new DataField<string>("id"), new DataField<double>("amount"));
        await using (var stream = File.Create(parquet))
        {
            await using var writer = await ParquetWriter.CreateAsync(schema, stream);
            using var group = writer.CreateRowGroup();
            await group.WriteAsync(schema.DataFields[0], new[] { "a" }, null);
            await group.WriteAsync<double>(schema.DataFields[1], new[] { 1.5 }.AsMemory(), null, null, default);
        }

        var run = () => Etl.From(ParquetFiles.Read<Order>(parquet)).To(new ListSink<Order>()).RunAsync();

        var message = (await run.Should().ThrowAsync<InvalidDataException>()).Which.Message;
        message.Should().StartWith($"Parquet file '{parquet}' does not match the schema of Order: ");
        message.Should().Contain("its column 'id' holds String values, which cannot be read as Int32");
        message.Should().Contain("its column 'amount' holds Double values, which cannot be read as Decimal");
        message.Should().Contain("it has no column 'customer_id'");
    }

    [Fact]
    public async Task ForeignFile_NullableAndNarrowerColumns_AreRead_AndANullInARequiredFieldIsQuarantined()
    {
        var parquet = _dir.File("foreign.parquet");
        var id = new DataField<int?>("ID");
        var total = new DataField<float>("total");
        var label = new DataField<string>("label", nullable: true);
        await using (var stream = File.Create(parquet))
        {
            await using var writer = await ParquetWriter.CreateAsync(new ParquetSchema(id, total, label), stream);
            using var group = writer.CreateRowGroup();
            await group.WriteAsync<int>(id, new int?[] { 1, null, 3 }.AsMemory(), null, null, default);
            await group.WriteAsync<float>(total, new[] { 1.5f, 2.5f, 3.5f }.AsMemory(), null, null, default);
            await group.WriteAsync(label, new[] { "one", "two", null! }, null);
        }

        var sink = new ListSink<Line>();
        var result = await Etl.From(ParquetFiles.Read<Line>(parquet)).To(sink).RunAsync();

        sink.Rows.Should().Equal(new Line(1, 1.5, "one"), new Line(3, 3.5, null));
        result.RowsQuarantined.Should().Be(1);
        result.QuarantinedRows.Should().ContainSingle().Which.Should().Be(
            new QuarantinedRow(result.RunId, "list", "source", parquet, 2, 2, ",2.5,two", "ID", "Column 'ID' is null."));
    }

    [Fact]
    public async Task RowGroupLargerThanTheBound_FailsNamingTheFileAndTheGroup()
    {
        var parquet = _dir.File("orders.parquet");
        await Etl.From(SqliteLoadTests.Generated(1_000)).To(ParquetFiles.Write<Order>(parquet)).RunAsync();

        var run = () => Etl.From(ParquetFiles.Read<Order>(parquet, new ParquetReadOptions { MaxRowGroupRows = 999 })).To(new ListSink<Order>()).RunAsync();

        (await run.Should().ThrowAsync<InvalidDataException>()).Which.Message.Should().StartWith(
            $"Parquet file '{parquet}': row group 0 has 1000 rows, more than ParquetReadOptions.MaxRowGroupRows (999)");
    }

    [Fact]
    public async Task FailedRun_LeavesNoFileBehind()
    {
        var parquet = _dir.File("orders.parquet");
        var rows = SqliteLoadTests.Generated(100).Select((o, i) => i == 50 ? throw new InvalidOperationException("boom") : o);

        var run = () => Etl.From(rows).To(ParquetFiles.Write<Order>(parquet)).RunAsync(new EtlRunOptions { BatchSize = 10 });

        await run.Should().ThrowAsync<InvalidOperationException>().WithMessage("boom");
        File.Exists(parquet).Should().BeFalse();
        Directory.GetFiles(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public void InvalidWriteOptions_AreAllReported()
    {
        var create = () => ParquetFiles.Write<Order>(_dir.File("x.parquet"), new ParquetWriteOptions { RowGroupRows = 0, DecimalPrecision = 40, DecimalScale = 41 });

        create.Should().Throw<ArgumentException>().Which.Message.Should()
            .Contain("RowGroupRows must be between 1 and 1,000,000 (was 0)").And
            .Contain("DecimalPrecision must be between 1 and 38 (was 40)").And
            .Contain("DecimalScale must be between 0 and the precision 40 (was 41)");
    }

    public sealed record Line(int Id, double Total, string? Label) : IEtlRecord<Line>
    {
        public static EtlSchema<Line> Schema { get; } =
            EtlSchema.For(r => new Line(r.Int32(0), r.Double(1), r.NullableString(2)))
                .Column("id", l => l.Id)
                .Column("total", l => l.Total)
                .Column("label", l => l.Label);
    }
}
