"""Reading studies: tables and fronts, the dashboard, the findings report, export."""
